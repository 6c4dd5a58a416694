"""The `wxreach` operator CLI."""
