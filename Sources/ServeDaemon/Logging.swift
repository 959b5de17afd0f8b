import CLinux
import Glibc
import Logging

/// Log lines to syslog (virtiofsd's --syslog), as "LABEL: message".
public struct SyslogLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level
    private let label: String

    /// nil `level`: nothing is logged.
    public init(label: String, level: Logger.Level?) {
        self.label = label
        logLevel = level ?? .critical
        openlog("daxfs-virtiofsd", LOG_PID, LOG_DAEMON)
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(level: Logger.Level, message: Logger.Message, metadata: Logger.Metadata?, source: String,
                    file: String, function: String, line: UInt) {
        let priority: Int32 = switch level {
        case .trace, .debug: LOG_DEBUG
        case .info: LOG_INFO
        case .notice: LOG_NOTICE
        case .warning: LOG_WARNING
        case .error: LOG_ERR
        case .critical: LOG_CRIT
        }
        daxfs_syslog(priority, "\(label): \(message)")
    }
}

/// Writes to descriptor 2 without Foundation.
public enum FileHandleOutput {
    public static func standardError(_ text: String) {
        var text = text
        text.withUTF8 { bytes in _ = Glibc.write(2, bytes.baseAddress, bytes.count) }
    }
}
