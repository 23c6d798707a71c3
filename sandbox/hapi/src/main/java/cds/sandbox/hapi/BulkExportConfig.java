package cds.sandbox.hapi;

import ca.uhn.fhir.batch2.jobs.export.BulkDataExportProvider;
import ca.uhn.fhir.batch2.maintenance.JobMaintenanceServiceImpl;
import ca.uhn.fhir.jpa.api.config.JpaStorageSettings;
import ca.uhn.fhir.rest.server.RestfulServer;
import org.springframework.beans.factory.config.BeanPostProcessor;
import org.springframework.boot.web.servlet.ServletRegistrationBean;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.Configuration;

/**
 * FHIR Bulk Data export ({@code $export} at the system, Group and Patient levels), as used by
 * {@code cds population}.
 *
 * <p>The export job definitions come with {@code Batch2JobsConfig} (its {@code BulkExportAppCtx}),
 * the {@link BulkDataExportProvider} bean with {@code JpaConfig}; this class switches job execution
 * on in the storage settings and registers the provider with the FHIR servlet, as the HAPI JPA
 * starter does when {@code bulk_export_enabled} is set. Export files are stored as Binary resources
 * (in the in-memory binary storage) and downloaded from {@code [base]/Binary/ID}; the status URL is
 * {@code [base]/$export-poll-status?_jobId=...}.
 */
@Configuration
public class BulkExportConfig {

	/**
	 * Batch2 jobs (an export is three steps) advance on each maintenance pass; HAPI runs one a
	 * minute, so a small export would take about three minutes. A sandbox can afford a pass every
	 * few seconds.
	 */
	static final long MAINTENANCE_PASS_MILLIS = 5_000;

	/**
	 * Turn on bulk export job execution on the storage settings, and shorten the Batch2 maintenance
	 * interval, as soon as those beans are created (before their jobs are scheduled).
	 */
	@Bean
	public static BeanPostProcessor bulkExportSettings() {
		return new BeanPostProcessor() {
			@Override
			public Object postProcessBeforeInitialization(Object bean, String beanName) {
				if (bean instanceof JpaStorageSettings settings) {
					settings.setEnableTaskBulkExportJobExecution(true);
				}
				if (bean instanceof JobMaintenanceServiceImpl maintenance) {
					maintenance.setScheduledJobFrequencyMillis(MAINTENANCE_PASS_MILLIS);
				}
				return bean;
			}
		};
	}

	/** Register the $export / $export-poll-status operations with the FHIR servlet. */
	@Bean
	public Object bulkExportProviderRegistration(
			ServletRegistrationBean<RestfulServer> fhirServlet, BulkDataExportProvider bulkDataExportProvider) {
		fhirServlet.getServlet().registerProvider(bulkDataExportProvider);
		return new Object();
	}
}
