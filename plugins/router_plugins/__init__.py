"""Built-in commons-router plugins, registered through entry points like any other."""
