// A small Java client of the KV store, run as a single-file source program (`java KvClient.java`,
// Java 11+): writes and reads one key after another, forever, at a slow pace. It knows nothing of
// OpenTelemetry: the injected Java agent (JAVA_TOOL_OPTIONS=-javaagent:... from the init
// container) instruments java.net.http, so each request is a CLIENT span whose W3C traceparent
// the KV coordinator continues. Environment: KV_URL (default http://store:7070), INTERVAL_MS
// (default 500), KVTRACE_KV_CA_FILE and KVTRACE_KV_TOKEN when the store's client port asks for
// TLS and a token (the same variables as `kvtrace kv`).
import java.io.FileInputStream;
import java.io.InputStream;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.security.KeyStore;
import java.security.cert.Certificate;
import java.security.cert.CertificateFactory;
import java.time.Duration;
import javax.net.ssl.SSLContext;
import javax.net.ssl.TrustManagerFactory;

public class KvClient {
    public static void main(String[] args) throws Exception {
        String url = System.getenv().getOrDefault("KV_URL", "http://store:7070").replaceAll("/+$", "");
        long interval = Long.parseLong(System.getenv().getOrDefault("INTERVAL_MS", "500"));
        String token = System.getenv("KVTRACE_KV_TOKEN");
        HttpClient.Builder builder = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(5));
        String caFile = System.getenv("KVTRACE_KV_CA_FILE");
        if (caFile != null) {
            builder.sslContext(trusting(caFile));
        }
        HttpClient client = builder.build();
        for (long n = 0; ; n++) {
            String key = "java/order-" + (n % 100);
            int written = call(client, token, HttpRequest.newBuilder(URI.create(url + "/v1/kv/" + key))
                    .PUT(HttpRequest.BodyPublishers.ofString("order " + n)));
            int read = call(client, token, HttpRequest.newBuilder(URI.create(url + "/v1/kv/" + key)).GET());
            System.out.println("PUT " + key + " -> " + written + ", GET -> " + read);
            Thread.sleep(interval);
        }
    }

    /** An SSL context that trusts the certificates of a PEM bundle (the store's CA). */
    static SSLContext trusting(String pemFile) throws Exception {
        KeyStore store = KeyStore.getInstance(KeyStore.getDefaultType());
        store.load(null, null);
        try (InputStream in = new FileInputStream(pemFile)) {
            int n = 0;
            for (Certificate cert : CertificateFactory.getInstance("X.509").generateCertificates(in)) {
                store.setCertificateEntry("ca-" + n++, cert);
            }
        }
        TrustManagerFactory trust = TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
        trust.init(store);
        SSLContext context = SSLContext.getInstance("TLS");
        context.init(null, trust.getTrustManagers(), null);
        return context;
    }

    static int call(HttpClient client, String token, HttpRequest.Builder request) {
        if (token != null) {
            request.header("Authorization", "Bearer " + token);
        }
        try {
            return client.send(request.timeout(Duration.ofSeconds(5)).build(),
                    HttpResponse.BodyHandlers.discarding()).statusCode();
        } catch (Exception e) {
            System.err.println(e);
            return 0;
        }
    }
}
