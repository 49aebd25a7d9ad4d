"""Stand-in for pyats.easypy: only the plugin base class."""
