// Introspect a token with the Nimbus OAuth 2.0 SDK, an independent RFC 7662 client, using
// client_secret_basic. Run by tests/store/rfc7662.rs as a single-file source program:
//   java -cp <classpath of pom.xml> NimbusIntrospect.java URL CLIENT_ID CLIENT_SECRET TOKEN
// Prints "status=<HTTP status>", then for a success "active=<bool>" and "scope=<scope>".
// Install the jars with: mvn -q -f tests/rfc7662/pom.xml dependency:go-offline

import com.nimbusds.oauth2.sdk.Scope;
import com.nimbusds.oauth2.sdk.TokenIntrospectionRequest;
import com.nimbusds.oauth2.sdk.TokenIntrospectionResponse;
import com.nimbusds.oauth2.sdk.TokenIntrospectionSuccessResponse;
import com.nimbusds.oauth2.sdk.auth.ClientSecretBasic;
import com.nimbusds.oauth2.sdk.auth.Secret;
import com.nimbusds.oauth2.sdk.http.HTTPResponse;
import com.nimbusds.oauth2.sdk.id.ClientID;
import com.nimbusds.oauth2.sdk.token.BearerAccessToken;
import java.net.URI;

public class NimbusIntrospect {
    public static void main(String[] args) throws Exception {
        ClientSecretBasic auth = new ClientSecretBasic(new ClientID(args[1]), new Secret(args[2]));
        TokenIntrospectionRequest request =
                new TokenIntrospectionRequest(new URI(args[0]), auth, new BearerAccessToken(args[3]));
        HTTPResponse http = request.toHTTPRequest().send();
        System.out.println("status=" + http.getStatusCode());
        if (!http.indicatesSuccess()) {
            return;
        }
        TokenIntrospectionResponse response = TokenIntrospectionResponse.parse(http);
        TokenIntrospectionSuccessResponse ok = response.toSuccessResponse();
        System.out.println("active=" + ok.isActive());
        Scope scope = ok.getScope();
        System.out.println("scope=" + (scope == null ? "" : scope.toString()));
    }
}
