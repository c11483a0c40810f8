"""Pure logic of the events stage."""
