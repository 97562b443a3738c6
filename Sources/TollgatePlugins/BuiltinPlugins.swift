import TollgateCore

/// Every plugin that ships with Tollgate. Adding one is one line here.
public enum BuiltinPlugins {
    public static let registry = PluginRegistry([
        PluginFactory(RequestIDPlugin.self),
        PluginFactory(HeadersPlugin.self),
        PluginFactory(RequestTerminationPlugin.self),
        PluginFactory(RateLimitPlugin.self),
    ])
}
