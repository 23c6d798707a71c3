"""The CDS Hooks service: discovery, patient-view prescreen cards, feedback."""
