import ArgumentParser

struct DaxBenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dax",
        abstract: "Compare reads through the DAX window with FUSE_READ and native pread, in one process.",
        discussion: """
        Serves a scratch directory with an embedded server (server and client in this \
        process, no VM, no root needed) and reads one data file, held in the host page \
        cache, in several ways:

          native pread       pread(2) on the host file (the baseline)
          native mmap        memcpy from a populated mmap of the host file, no window
                             manager: for 4 KiB reads, the ceiling of a window copy
          FUSE_READ          a client with mode never: every read is a FUSE_READ
          window             a client with mode always and a window as large as the
                             file, read through once beforehand, so every range is
                             mapped and every page touched (steady state)
          window, first touch  a new client of the same kind per round: sequential,
                             the file read once; random, every 4 KiB block read once
                             in random order (one SETUPMAPPING per 2 MiB range plus
                             the page faults, which the kernel batches by fault-around)
          window N %         random reads with the window at 25, 50 and 100 % of the
                             file, in mode auto (the default: small misses under
                             pressure go to FUSE_READ) and mode always (Linux's
                             policy: every miss maps, evicting a range not used
                             recently, by CLOCK); warmed with random reads first

        The page cache: the data file is dropped from the cache and read back through \
        a 2 MiB-aligned, huge-page-advised (MADV_HUGEPAGE) mapping, as the window's \
        ranges are, so it is held in 2 MiB folios that map with one page-table entry \
        each (the share is printed as page_cache_huge_pct); --small-folios warms it \
        with pread instead. The native mmap is mapped the same way as the window.

        Random reads are 4 KiB at uniformly random 4 KiB-aligned offsets for a fixed \
        time, the same offsets for every configuration in a round; sequential reads are \
        1 MiB preads over the whole file, repeated for a minimum time. Mapping latency is \
        timed with a raw FUSE client on its own embedded server: 2,000 SETUPMAPPING + \
        REMOVEMAPPING round trips of 2 MiB per round, at random file offsets, and as many \
        SETUPMAPPINGs over a mapped range whose pages were all touched (what inline \
        reclaim pays). setupmapping_p50_us and setupmapping_p99_us are the round trip.

        Each round runs every configuration, rotating the order; the table shows the \
        median of the rounds (for latencies, the median of each round's p50 and p99), \
        ratios of speed (above 1 means faster than the baseline), the share of reads \
        that hit a mapped range, set up a new mapping (evicting one when the window is \
        full) or went to FUSE_READ, and the CPU share of this process \
        (client and server both run here, so it stays near 100 %). MB is 10^6 bytes. \
        Progress goes to stderr; stdout has only the results.
        """
    )

    @Flag(help: "Smaller run: 256 MiB data file, 3 rounds, 0.5 s per random-read configuration (default: 1 GiB, 5 rounds, 1 s).")
    var quick = false

    @Flag(help: "After the table, print one JSON object with every figure and ratio as the last line of stdout (default: off).")
    var json = false

    @Flag(help: "Warm the page cache with pread, as readahead sizes folios (at most 128 KiB here), instead of through a huge-page-advised mapping that reads 2 MiB folios (default: 2 MiB folios, what a file first read through the DAX window gets).")
    var smallFolios = false

    @Option(name: .customLong("dir"),
            help: ArgumentHelp("Parent of the scratch directory; the benchmark makes a fresh directory there and removes it afterwards.",
                               valueName: "path"))
    var directory = "/tmp"

    func run() throws {
        Interruption.install()
        var suite = DaxBenchSuite(size: quick ? .quick : .full, parent: directory)
        suite.smallFolios = smallFolios
        let results: DaxBenchSuite.Results
        do {
            results = try suite.run()
        } catch {
            note("daxfs bench dax: \(Interruption.requested ? BenchError.interrupted : error)")
            throw ExitCode(Interruption.requested ? 130 : 1)
        }
        print(results.table())
        if json { print(results.json(quick: quick)) }
    }
}
