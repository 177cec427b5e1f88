"""One module per system under test, each a subclass of ``base.Adapter``."""
