"""Pure logic of the opportunities stage: the impact score, ranking, decay and outcome learning."""
