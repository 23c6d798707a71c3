package cds.sandbox.hapi;

import ca.uhn.fhir.context.FhirContext;
import ca.uhn.fhir.context.support.IValidationSupport;
import ca.uhn.fhir.jpa.api.config.JpaStorageSettings;
import ca.uhn.fhir.jpa.api.dao.IFhirSystemDao;
import ca.uhn.fhir.jpa.provider.IJpaSystemProvider;
import ca.uhn.fhir.jpa.provider.JpaCapabilityStatementProvider;
import ca.uhn.fhir.jpa.search.DatabaseBackedPagingProvider;
import ca.uhn.fhir.narrative2.NullNarrativeGenerator;
import ca.uhn.fhir.rest.api.EncodingEnum;
import ca.uhn.fhir.rest.server.HardcodedServerAddressStrategy;
import ca.uhn.fhir.rest.server.RestfulServer;
import ca.uhn.fhir.rest.server.interceptor.CorsInterceptor;
import ca.uhn.fhir.rest.server.provider.ResourceProviderFactory;
import ca.uhn.fhir.rest.server.util.ISearchParamRegistry;
import org.springframework.beans.factory.annotation.Value;
import org.springframework.boot.web.servlet.ServletRegistrationBean;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.Configuration;
import org.springframework.web.cors.CorsConfiguration;

import java.util.Arrays;
import java.util.List;

/** The FHIR REST endpoint: a HAPI {@link RestfulServer} servlet mounted at /fhir/*. */
@Configuration
public class FhirServletConfig {

	@Bean
	public ServletRegistrationBean<RestfulServer> fhirServlet(
			IFhirSystemDao<?, ?> systemDao,
			IJpaSystemProvider systemProvider,
			ResourceProviderFactory resourceProviders,
			DatabaseBackedPagingProvider pagingProvider,
			JpaStorageSettings storageSettings,
			ISearchParamRegistry searchParamRegistry,
			IValidationSupport validationSupport,
			@Value("${hapi.sandbox.port}") int port,
			@Value("${hapi.sandbox.default-page-size}") int defaultPageSize,
			@Value("${hapi.sandbox.max-page-size}") int maxPageSize,
			@Value("${hapi.sandbox.cors-origins}") String corsOrigins) {
		FhirContext ctx = systemDao.getContext();
		// No generated narratives in responses (as on a default HAPI starter server).
		ctx.setNarrativeGenerator(new NullNarrativeGenerator());

		RestfulServer server = new RestfulServer(ctx);
		// One resource provider per resource type (read, search, create, update, delete...).
		server.registerProviders(resourceProviders.createProviders());
		// System-level operations at the base: transaction/batch Bundles, $expunge, history.
		server.registerProvider(systemProvider);
		// A real CapabilityStatement at /fhir/metadata, built from the search parameter registry.
		JpaCapabilityStatementProvider capabilities = new JpaCapabilityStatementProvider(
				server, systemDao, storageSettings, searchParamRegistry, validationSupport);
		capabilities.setImplementationDescription("HAPI FHIR R4 sandbox (in-memory H2)");
		server.setServerConformanceProvider(capabilities);

		// Search results are paged through the database. HAPI's defaults are 10 per page with a
		// silent maximum of 50; make both explicit.
		pagingProvider.setDefaultPageSize(defaultPageSize);
		pagingProvider.setMaximumPageSize(maxPageSize);
		server.setPagingProvider(pagingProvider);

		// Browser apps on the developer's machine (the CDS Hooks sandbox, SMART apps) read this
		// server directly: answer CORS preflights and add CORS headers for the allowed origins.
		List<String> origins = Arrays.stream(corsOrigins.split(","))
				.map(String::trim)
				.filter(origin -> !origin.isEmpty())
				.toList();
		if (!origins.isEmpty()) {
			server.registerInterceptor(new CorsInterceptor(corsConfiguration(origins)));
		}

		server.setDefaultResponseEncoding(EncodingEnum.JSON);
		server.setDefaultPrettyPrint(false);
		// Absolute links (Bundle.link next/self, Location headers) always use this base, so clients
		// can check that `next` starts with the base URL they were configured with.
		server.setServerAddressStrategy(new HardcodedServerAddressStrategy("http://127.0.0.1:" + port + "/fhir"));

		ServletRegistrationBean<RestfulServer> registration = new ServletRegistrationBean<>(server, "/fhir/*");
		registration.setName("fhirServlet");
		registration.setLoadOnStartup(1);
		return registration;
	}

	/** CORS for the given origin patterns: FHIR reads and writes, the headers FHIR clients send. */
	static CorsConfiguration corsConfiguration(List<String> originPatterns) {
		CorsConfiguration config = new CorsConfiguration();
		config.setAllowedOriginPatterns(originPatterns);
		config.setAllowedMethods(List.of("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"));
		config.setAllowedHeaders(List.of(
				"Accept", "Authorization", "Cache-Control", "Content-Type", "If-Match", "If-None-Exist",
				"If-None-Match", "Prefer", "X-Requested-With", "Origin"));
		config.setExposedHeaders(List.of("Location", "Content-Location", "ETag", "Last-Modified"));
		config.setAllowCredentials(false);
		config.setMaxAge(600L);
		return config;
	}
}
