"""An example third-party shopsync channel plugin: the "Acme shop" REST API and its emulator."""
