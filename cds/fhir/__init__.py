"""FHIR access for the service: one small gateway over fhirpy and a shared httpx pool."""

from cds.fhir.gateway import FhirGateway, GatewayLimits, PooledFHIRClient, SearchResult, bundle_resources

__all__ = ["FhirGateway", "GatewayLimits", "PooledFHIRClient", "SearchResult", "bundle_resources"]
