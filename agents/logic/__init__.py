"""Pure logic of the agents: no faust, boto3 or fastmcp imports; time is passed in."""
