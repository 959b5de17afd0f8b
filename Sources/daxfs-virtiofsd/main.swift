import Glibc
import HostSystem
import Logging
import ServeDaemon

// daxfs-virtiofsd: daxfs's vhost-user-fs backend with the Rust virtiofsd's
// command line, for VM platforms that start virtiofsd themselves (libvirt's
// <binary path='…'/>). The options are in ServeDaemon/VirtiofsdCommandLine.swift.

let action: VirtiofsdCommandLine.Action
do {
    action = try VirtiofsdCommandLine.parse(Array(CommandLine.arguments.dropFirst()))
} catch {
    FileHandleOutput.standardError("daxfs-virtiofsd: \(error)\n")
    exit(2)
}

switch action {
case .printCapabilities:
    print(VirtiofsdCommandLine.capabilitiesJSON)
case .version:
    print("daxfs-virtiofsd (daxfs) 0.1, compatible with virtiofsd 1.14's command line")
case .help:
    print(VirtiofsdCommandLine.helpText)
case .serve(let configuration, let logging):
    LoggingSystem.bootstrap { label in
        if logging.syslog { return SyslogLogHandler(label: label, level: logging.level) }
        var handler = StreamLogHandler.standardError(label: label)
        handler.logLevel = logging.level ?? .critical
        if logging.level == nil { return SwiftLogNoOpLogHandler() }
        return handler
    }
    do {
        try ServeDaemon.run(configuration, logger: Logger(label: "daxfs-virtiofsd"))
    } catch {
        Logger(label: "daxfs-virtiofsd").critical("\(error)")
        FileHandleOutput.standardError("daxfs-virtiofsd: \(error)\n")
        exit(1)
    }
}
