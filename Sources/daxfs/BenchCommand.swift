import ArgumentParser
import Glibc

/// `daxfs bench`: performance suites, kept apart from the tests. Each suite
/// measures its baseline in the same run and reports ratios to it, so the
/// figures hold on a noisy machine.
struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Benchmarks that measure their own baseline in the same run.",
        subcommands: [MountBenchCommand.self, DaxBenchCommand.self, MmapBenchCommand.self]
    )
}

struct MountBenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mount",
        abstract: "Compare file I/O on a host directory with the same directory through daxfs mounts.",
        discussion: """
        Runs the same workloads on the same files in three configurations: on the \
        host directory itself (native), through `daxfs mount` with kernel passthrough, \
        and through `daxfs mount --no-passthrough`. Both mounts are child processes of \
        this command and serve the same host directory. Needs root and /dev/fuse.

        Workloads, each timed from open to close:
          sequential read    1 MiB preads over the data file, page cache warm
          sequential write   1 MiB pwrites into a new file of the data file's
                             size; close is timed, fsync is not (this is the
                             write(2) path, not the disk); just before, an
                             untimed write and unlink of twice that size frees
                             page-cache memory for it to reuse, so no
                             configuration pays a VM's first-touch page faults
          seq. overwrite     the same again over that file's cached pages, so
                             no page-cache memory is allocated; then the file
                             is removed
          4 KiB write        write(2)s of 4 KiB into a new file (64 MiB, or
                             256 MiB in a full run); close is timed, fsync
                             is not; page-cache memory recycled first as above
          random 4 KiB read  preads at uniformly random 4 KiB-aligned offsets of
                             the data file for a fixed time, same offsets for
                             every configuration
          create+stat+unlink creates N empty files in a fresh directory, stats
                             each, unlinks each (10,000 files, a fresh
                             directory each round); reported as whole cycles
                             per second and per operation

        Each round runs every workload in every configuration, rotating the order; \
        the table shows the median of the rounds, its ratio to native, and the CPU \
        share of this process (below 100 % means it waited, e.g. for the server). \
        In the JSON, `create_vs_native`, `stat_vs_native` and `unlink_vs_native` are \
        the passthrough mount's ratios (the same as `passthrough_create_vs_native`...). \
        MB is 10^6 bytes. Progress goes to stderr; stdout has only the results.
        """
    )

    @Flag(help: "Smaller run: 256 MiB data file, 64 MiB of 4 KiB writes, 0.5 s of random reads, 3 rounds (default: 1 GiB, 256 MiB, 1 s, 5 rounds; 10,000 files in both).")
    var quick = false

    @Flag(help: "After the table, print one JSON object with every figure and ratio as the last line of stdout.")
    var json = false

    @Option(name: .customLong("dir"),
            help: ArgumentHelp("Parent of the scratch directory; the benchmark makes a fresh directory there and removes it afterwards.",
                               valueName: "path"))
    var directory = "/tmp"

    @Flag(help: .hidden)
    var nativeOnly = false

    func run() throws {
        Interruption.install()
        let suite = MountBenchSuite(size: quick ? .quick : .full, parent: directory,
                                    configs: nativeOnly ? [.native] : BenchConfig.allCases)
        let results: MountBenchSuite.Results
        do {
            results = try suite.run()
        } catch {
            note("daxfs bench mount: \(Interruption.requested ? BenchError.interrupted : error)")
            throw ExitCode(Interruption.requested ? 130 : 1)
        }
        print(results.table())
        if json { print(results.json(quick: quick)) }
        for problem in results.shutdownErrors { note("daxfs bench mount: \(problem)") }
        if !results.shutdownErrors.isEmpty { throw ExitCode.failure }
    }
}
