import ArgumentParser

struct MountCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "mount", abstract: "Mount a host directory through /dev/fuse.")
    @Argument(help: "The host directory to share.") var sharedDir: String
    @Argument(help: "Where to mount it.") var mountpoint: String
    func run() throws {}
}
