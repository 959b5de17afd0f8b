import ArgumentParser

@main
struct Daxfs: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "daxfs",
        abstract: "A FUSE file server that shares a host directory, with DAX and kernel passthrough.",
        subcommands: [MountCommand.self, ServeCommand.self, BenchCommand.self, ClientCommand.self]
    )
}
