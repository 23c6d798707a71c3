"""CDS Hooks prescreening service for clinical trial NCT04582136 (sirolimus in active SLE)."""

__version__ = "0.1.0"
