import TollgateCore

/// Every plugin that ships with Tollgate. Adding one is one line here.
public enum BuiltinPlugins {
    public static let registry: PluginRegistry = {
        var registry = PluginRegistry([
            PluginFactory(RequestIDPlugin.self),
            PluginFactory(HeadersPlugin.self),
            PluginFactory(RequestTerminationPlugin.self),
            PluginFactory(RateLimitPlugin.self),
            PluginFactory(PlansPlugin.self),
            PluginFactory(UsageMeteringPlugin.self),
            PluginFactory(KeyAuthPlugin.self),
            PluginFactory(BasicAuthPlugin.self),
            PluginFactory(DigestAuthPlugin.self),
            PluginFactory(JWTPlugin.self),
            PluginFactory(OAuth2Plugin.self),
            PluginFactory(MTLSPlugin.self),
            PluginFactory(OAuth2TokenPlugin.self),
            PluginFactory(AuthChainPlugin.self),
            PluginFactory(ACLPlugin.self),
            PluginFactory(ScopesPlugin.self),
            PluginFactory(AuthorizePlugin.self),
            PluginFactory(AccessLogPlugin.self),
            PluginFactory(PrometheusPlugin.self),
            PluginFactory(OpenTelemetryPlugin.self),
            PluginFactory(ProxyCachePlugin.self),
            PluginFactory(CompressionPlugin.self),
        ])
        registry.registerCredential(kind: "key_auth", parser: KeyCredential.parse)
        registry.registerCredential(kind: "basic_auth", parser: BasicCredential.parse)
        registry.registerCredential(kind: "jwt", parser: JWTCredential.parse)
        registry.registerCredential(kind: "digest_auth", parser: DigestCredential.parse)
        registry.registerCredential(kind: "oauth2", parser: OAuth2Credential.parse)
        registry.registerCredential(kind: "mtls", parser: MTLSCredential.parse)
        return registry
    }()
}
