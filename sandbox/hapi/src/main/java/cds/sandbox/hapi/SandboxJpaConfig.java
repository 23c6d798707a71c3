package cds.sandbox.hapi;

import ca.uhn.fhir.context.FhirContext;
import ca.uhn.fhir.jpa.api.config.JpaStorageSettings;
import ca.uhn.fhir.jpa.binary.api.IBinaryStorageSvc;
import ca.uhn.fhir.jpa.binstore.MemoryBinaryStorageSvcImpl;
import ca.uhn.fhir.jpa.config.util.HapiEntityManagerFactoryUtil;
import ca.uhn.fhir.jpa.model.config.PartitionSettings;
import ca.uhn.fhir.jpa.model.config.SubscriptionSettings;
import ca.uhn.fhir.jpa.model.dialect.HapiFhirH2Dialect;
import com.zaxxer.hikari.HikariConfig;
import com.zaxxer.hikari.HikariDataSource;
import jakarta.persistence.EntityManagerFactory;
import java.util.Map;
import javax.sql.DataSource;
import org.springframework.beans.factory.annotation.Value;
import org.springframework.beans.factory.config.ConfigurableListableBeanFactory;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.Configuration;
import org.springframework.context.annotation.Primary;
import org.springframework.orm.jpa.JpaTransactionManager;
import org.springframework.orm.jpa.LocalContainerEntityManagerFactoryBean;

/** Storage for the sandbox: in-memory H2, HAPI's Hibernate setup, and HAPI storage settings. */
@Configuration
public class SandboxJpaConfig {

	/**
	 * By default one private in-memory database that lives until the process exits. In-memory data
	 * is on the Java heap (roughly 15 KB per stored resource with its indexes), so for very large
	 * data sets pass an H2 file URL instead, e.g. {@code jdbc:h2:file:/tmp/hapi-db}.
	 */
	@Bean(destroyMethod = "close")
	public DataSource dataSource(@Value("${hapi.sandbox.jdbc-url}") String jdbcUrl) {
		HikariConfig config = new HikariConfig();
		config.setJdbcUrl(jdbcUrl);
		config.setUsername("sa");
		config.setPassword("");
		config.setMaximumPoolSize(10);
		return new HikariDataSource(config);
	}

	/**
	 * HAPI's own EntityManagerFactory (entity packages, Hibernate integrations); we add the data
	 * source and the Hibernate settings a Spring Boot app would otherwise take from spring.jpa.*.
	 */
	@Primary
	@Bean
	public LocalContainerEntityManagerFactoryBean entityManagerFactory(
			DataSource dataSource,
			ConfigurableListableBeanFactory beanFactory,
			FhirContext fhirContext,
			JpaStorageSettings storageSettings) {
		LocalContainerEntityManagerFactoryBean emf =
				HapiEntityManagerFactoryUtil.newEntityManagerFactory(beanFactory, fhirContext, storageSettings);
		emf.setPersistenceUnitName("HAPI_PU");
		emf.setDataSource(dataSource);
		Map<String, Object> jpa = emf.getJpaPropertyMap();
		jpa.put("hibernate.dialect", HapiFhirH2Dialect.class.getName());
		// Create the schema from the entities at start-up (the database is empty every time).
		jpa.put("hibernate.hbm2ddl.auto", "update");
		// No Lucene/Elasticsearch: without this Hibernate Search fails with HSEARCH000582.
		jpa.put("hibernate.search.enabled", "false");
		jpa.put("hibernate.jdbc.batch_size", "20");
		jpa.put("hibernate.cache.use_query_cache", "false");
		jpa.put("hibernate.cache.use_second_level_cache", "false");
		jpa.put("hibernate.format_sql", "false");
		jpa.put("hibernate.show_sql", "false");
		return emf;
	}

	@Primary
	@Bean
	public JpaTransactionManager transactionManager(EntityManagerFactory entityManagerFactory) {
		return new JpaTransactionManager(entityManagerFactory);
	}

	/** Server behaviour that tests depend on. */
	@Bean
	public JpaStorageSettings jpaStorageSettings(@Value("${hapi.sandbox.bulk-load:false}") boolean bulkLoad) {
		JpaStorageSettings settings = new JpaStorageSettings();
		if (bulkLoad) {
			// Loading a large population (the population benchmark): HAPI's mass ingestion mode
			// (skips some per-write checks, e.g. tag and search URL caches) and a cache of resolved
			// conditional references (Synthea's `Organization?identifier=...` on every Encounter).
			// Validation, referential integrity and indexing are unchanged.
			settings.setMassIngestionMode(true);
			settings.setMatchUrlCacheEnabled(true);
		}
		// By default HAPI answers a repeated search from a 60 s cache, so a test that writes and
		// then searches again can see stale results. Always run the search.
		settings.setReuseCachedSearchResultsForMillis(null);
		// Let tests reset the database with POST /fhir/$expunge?expungeEverything=true.
		settings.setExpungeEnabled(true);
		settings.setDeleteExpungeEnabled(true);
		settings.setAllowMultipleDelete(true);
		// Everything else stays at HAPI's defaults (as on a stock HAPI server): client-assigned ids
		// must contain a non-digit, references to missing resources are rejected, no placeholders.
		return settings;
	}

	@Bean
	public PartitionSettings partitionSettings() {
		return new PartitionSettings(); // partitioning off
	}

	@Bean
	public SubscriptionSettings subscriptionSettings() {
		return new SubscriptionSettings(); // no subscription channel types enabled
	}

	/** Binary storage is required by the JPA config; keep it in memory like everything else. */
	@Bean
	public IBinaryStorageSvc binaryStorageSvc() {
		return new MemoryBinaryStorageSvcImpl();
	}
}
