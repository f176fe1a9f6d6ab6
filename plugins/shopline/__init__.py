"""SHOPLINE channel plugin: the Open API REST channel and an emulator of the subset it uses."""
