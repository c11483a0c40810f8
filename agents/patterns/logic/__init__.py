"""Pure logic of the error-pattern stage: masking, template mining, windowed counts."""
