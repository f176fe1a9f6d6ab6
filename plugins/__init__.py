"""Built-in channel plugins, registered through the `shopsync` entry-point group."""
