"""Population prescreening: FHIR Bulk Data export, NDJSON grouped by patient, screening on Dask.

`cds population --fhir-server URL` (see `cds.population.run`) exports what the trial reads
(`bulk`), partitions the NDJSON by patient (`partition`), screens each partition with the hook's
engine on Dask (`screening`) and stores the run in the database (`store`).
"""
