"""CDS Hooks prescreening service for clinical trials, one CDS service per registered trial (`cds.trials`)."""

__version__ = "0.1.0"
