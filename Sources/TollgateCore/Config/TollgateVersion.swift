/// The release of this build (`tollgate version`, the build-info metric).
public enum TollgateVersion {
    public static let current = "0.1.0"
}
