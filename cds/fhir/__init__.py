"""The FHIR boundary of the service: a small typed httpx client over one shared pool (`gateway`),
the URL allow-list (`urls`) and bounded JSON decoding (`safejson`). Plain FHIR JSON helpers live in
`cds.fhirjson` (no HTTP stack, importable by the pure engine)."""

from cds.fhir.gateway import FhirClient, FhirGateway, GatewayLimits, SearchResult, bundle_resources

__all__ = ["FhirClient", "FhirGateway", "GatewayLimits", "SearchResult", "bundle_resources"]
