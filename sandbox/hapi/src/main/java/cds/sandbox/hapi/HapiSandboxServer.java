package cds.sandbox.hapi;

import ca.uhn.fhir.batch2.jobs.config.Batch2JobsConfig;
import ca.uhn.fhir.jpa.api.config.ThreadPoolFactoryConfig;
import ca.uhn.fhir.jpa.batch2.JpaBatch2Config;
import ca.uhn.fhir.jpa.config.HapiJpaConfig;
import ca.uhn.fhir.jpa.config.r4.JpaR4Config;
import ca.uhn.fhir.jpa.subscription.channel.config.SubscriptionChannelConfig;
import java.util.LinkedHashMap;
import java.util.Map;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.springframework.boot.SpringApplication;
import org.springframework.boot.autoconfigure.SpringBootApplication;
import org.springframework.boot.autoconfigure.elasticsearch.ElasticsearchRestClientAutoConfiguration;
import org.springframework.boot.autoconfigure.flyway.FlywayAutoConfiguration;
import org.springframework.boot.autoconfigure.jdbc.DataSourceAutoConfiguration;
import org.springframework.boot.autoconfigure.orm.jpa.HibernateJpaAutoConfiguration;
import org.springframework.boot.autoconfigure.quartz.QuartzAutoConfiguration;
import org.springframework.boot.autoconfigure.thymeleaf.ThymeleafAutoConfiguration;
import org.springframework.boot.context.event.ApplicationReadyEvent;
import org.springframework.context.annotation.Import;
import org.springframework.context.event.EventListener;
import org.springframework.core.env.Environment;

/**
 * Entry point of the local HAPI FHIR R4 sandbox: a real HAPI JPA server on an in-memory H2
 * database, served by embedded Tomcat at {@code http://127.0.0.1:PORT/fhir}.
 *
 * <p>Settings (command-line {@code --name=value}, {@code -Dname=value}, or the environment
 * variable in brackets):
 *
 * <ul>
 *   <li>{@code hapi.sandbox.port} [HAPI_SANDBOX_PORT], default 8090; a bare first argument such
 *       as {@code 8091} is also taken as the port.
 *   <li>{@code hapi.sandbox.default-page-size} [HAPI_SANDBOX_DEFAULT_PAGE_SIZE], default 50.
 *   <li>{@code hapi.sandbox.max-page-size} [HAPI_SANDBOX_MAX_PAGE_SIZE], default 500.
 *   <li>{@code hapi.sandbox.jdbc-url} [HAPI_SANDBOX_JDBC_URL], default an in-memory H2 database;
 *       an H2 file URL ({@code jdbc:h2:file:/path/db}) keeps big data sets off the Java heap.
 *   <li>{@code hapi.sandbox.cors-origins} [HAPI_SANDBOX_CORS_ORIGINS], comma-separated origin
 *       patterns allowed by CORS (browser apps such as the CDS Hooks sandbox); default localhost and
 *       127.0.0.1 on any port ({@code http://localhost:[*]}). Empty: no CORS headers.
 *   <li>{@code hapi.sandbox.bulk-load} [HAPI_SANDBOX_BULK_LOAD], default false; true sets HAPI's mass
 *       ingestion mode and the conditional-reference cache (loading a large population).
 *   <li>{@code -Dhapi.sandbox.exitOnStdinEof=true}: exit when standard input reaches end-of-file,
 *       so a server started by a script dies with it (the Python launcher keeps a pipe open).
 * </ul>
 *
 * <p>Spring Boot auto-configuration supplies the web server only: HAPI builds its own
 * EntityManagerFactory, transaction manager and schema (see {@link SandboxJpaConfig}), runs its own
 * Quartz scheduler, has no Flyway migrations to run here and no Elasticsearch, so those
 * auto-configurations are off.
 */
@SpringBootApplication(
		exclude = {
			DataSourceAutoConfiguration.class,
			HibernateJpaAutoConfiguration.class,
			FlywayAutoConfiguration.class,
			QuartzAutoConfiguration.class,
			ThymeleafAutoConfiguration.class,
			// HAPI brings the Elasticsearch client jar; without this Spring Boot creates a client that
			// keeps trying to "sniff" localhost:9200.
			ElasticsearchRestClientAutoConfiguration.class
		})
@Import({
	// The R4 JPA server: FhirContext, DAOs, resource providers, search, transactions, expunge.
	JpaR4Config.class,
	// Paging provider, stale-search cleanup, resource counts (beans the starter also defines).
	HapiJpaConfig.class,
	// Batch2 job framework; JpaConfig wires the job coordinator into several services.
	JpaBatch2Config.class,
	Batch2JobsConfig.class,
	// Message-broker channels (IBrokerClient) that the batch2 job framework sends work through.
	// (SubscriptionSubmitterConfig is not needed: this server does not process Subscriptions.)
	SubscriptionChannelConfig.class,
	ThreadPoolFactoryConfig.class,
	// Our own beans: data source, JPA, storage settings and the FHIR servlet.
	SandboxJpaConfig.class,
	FhirServletConfig.class
})
public class HapiSandboxServer {

	private static final Logger LOG = LoggerFactory.getLogger(HapiSandboxServer.class);

	public static void main(String[] args) {
		if (Boolean.getBoolean("hapi.sandbox.exitOnStdinEof")) {
			exitOnStdinEof();
		}
		SpringApplication app = new SpringApplication(HapiSandboxServer.class);
		app.setDefaultProperties(defaultProperties());
		app.run(portArgument(args));
	}

	/** Stop (running the normal shutdown hooks) once whoever started us closes our stdin. */
	private static void exitOnStdinEof() {
		Thread watcher = new Thread(
				() -> {
					try {
						while (System.in.read() != -1) {
							// ignore input
						}
					} catch (java.io.IOException e) {
						// treat a broken pipe like end-of-file
					}
					LOG.info("Standard input closed: shutting down");
					System.exit(0);
				},
				"stdin-eof-watcher");
		watcher.setDaemon(true);
		watcher.start();
	}

	/** Accept a bare port number as the first argument ("8091" means --hapi.sandbox.port=8091). */
	private static String[] portArgument(String[] args) {
		if (args.length > 0 && args[0].matches("\\d+")) {
			String[] rewritten = args.clone();
			rewritten[0] = "--hapi.sandbox.port=" + args[0];
			return rewritten;
		}
		return args;
	}

	/** Lowest-precedence Spring properties; anything on the command line or in the environment wins. */
	private static Map<String, Object> defaultProperties() {
		Map<String, Object> props = new LinkedHashMap<>();
		props.put("hapi.sandbox.port", "8090");
		props.put("hapi.sandbox.default-page-size", "50");
		props.put("hapi.sandbox.max-page-size", "500");
		props.put("hapi.sandbox.jdbc-url", "jdbc:h2:mem:hapi_sandbox;DB_CLOSE_DELAY=-1");
		props.put("hapi.sandbox.cors-origins", "http://localhost:[*],http://127.0.0.1:[*]");
		props.put("hapi.sandbox.bulk-load", "false");
		// Loopback only: this is a development sandbox with no security at all.
		props.put("server.address", "127.0.0.1");
		props.put("server.port", "${hapi.sandbox.port}");
		// FHIR uses '|' in token searches (system|code); Tomcat rejects it unless relaxed.
		props.put("server.tomcat.relaxed-query-chars", "|");
		props.put("server.tomcat.threads.max", "32");
		// HAPI's configuration classes reference each other circularly.
		props.put("spring.main.allow-circular-references", "true");
		props.put("spring.main.banner-mode", "off");
		props.put("spring.jmx.enabled", "false");
		// HAPI logs a lot at INFO during start-up; keep the interesting parts.
		props.put("logging.level.root", "INFO");
		props.put("logging.level.org.hibernate", "WARN");
		props.put("logging.level.ca.uhn.fhir.jpa.term", "WARN");
		props.put("logging.level.ca.uhn.fhir.jpa.searchparam", "WARN");
		props.put("logging.level.ca.uhn.fhir.jpa.batch2", "WARN");
		props.put("logging.level.ca.uhn.fhir.batch2", "WARN");
		props.put("logging.level.org.quartz", "WARN");
		return props;
	}

	@EventListener
	public void onReady(ApplicationReadyEvent event) {
		Environment env = event.getApplicationContext().getEnvironment();
		LOG.info(
				"HAPI FHIR sandbox ready at http://127.0.0.1:{}/fhir (page size {} / max {})",
				env.getProperty("local.server.port"),
				env.getProperty("hapi.sandbox.default-page-size"),
				env.getProperty("hapi.sandbox.max-page-size"));
	}
}
