"""Pure logic of the ingest stage (no faust, aiokafka, boto3 or fastmcp; time passed in)."""
