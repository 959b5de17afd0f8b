import DaxClient

extension DaxBenchSuite.Results {
    /// Random-read rows, in table order.
    private var randomRows: [(title: String, key: String)] {
        var rows: [(String, String)] = [DaxReadPath.native, .mmap, .fuseRead, .window].map { ($0.title, $0.key) }
        rows.append(("window, first touch", "dax_first_touch"))
        for percent in DaxBenchSuite.sweepPercents {
            for mode in DaxBenchSuite.sweepModes {
                let path = DaxReadPath.sweep(percent: percent, mode: mode)
                rows.append((path.title, path.key))
            }
        }
        return rows
    }

    private var sequentialRows: [(title: String, key: String)] {
        [DaxReadPath.native, .mmap, .fuseRead, .window].map { ($0.title, $0.key) } + [("window, first touch", "dax_first_touch")]
    }

    private static let mappingRows: [(title: String, key: String)] = [
        ("SETUPMAPPING+REMOVEMAPPING", "setupmapping"),
        ("  SETUPMAPPING", "setupmapping_only"),
        ("  REMOVEMAPPING", "removemapping"),
        ("SETUPMAPPING over a mapped range", "setupmapping_replace"),
    ]

    /// Speed of `key` relative to `baseline` for figures in µs per read (above 1: faster).
    private func latencyRatio(_ key: String, to baseline: String) -> Double {
        median("\(baseline)_rand4k_us") / median("\(key)_rand4k_us")
    }

    private func rateRatio(_ key: String, to baseline: String) -> Double {
        median("\(key)_seq1m_mbps") / median("\(baseline)_seq1m_mbps")
    }

    func table() -> String {
        let range = "\(DaxBenchSuite.rangeSize >> 20) MiB"
        var lines = ["median of \(size.rounds) rounds; \(size.dataBytes >> 20) MiB file in the host page cache "
            + "(\(formatted(median("page_cache_huge_pct"), decimals: 0)) % in 2 MiB folios); \(range) ranges; "
            + "window N % = N % of the file"]
        func cell(_ x: Double, _ decimals: Int, _ width: Int) -> String { padLeft(formatted(x, decimals: decimals), width) }
        func pct(_ key: String) -> String {
            samples[key] == nil ? padLeft("-", 8) : cell(median(key), 1, 8)
        }

        lines.append(padRight("random 4 KiB read", 34) + padLeft("µs/read", 9) + padLeft("×native", 9) + padLeft("×FUSE_READ", 12)
            + padLeft("hits %", 8) + padLeft("maps %", 8) + padLeft("FUSE %", 8) + padLeft("cpu %", 7))
        for (title, key) in randomRows {
            lines.append(padRight("  " + title, 34) + cell(median("\(key)_rand4k_us"), 3, 9)
                + cell(latencyRatio(key, to: "native"), 2, 9) + cell(latencyRatio(key, to: "fuse_read"), 2, 12)
                + pct("\(key)_rand4k_hit_pct") + pct("\(key)_rand4k_map_pct") + pct("\(key)_rand4k_fuse_read_pct") + cell(median("\(key)_rand4k_cpu_pct"), 0, 7))
        }

        lines.append(padRight("sequential 1 MiB read", 34) + padLeft("MB/s", 9) + padLeft("×native", 9) + padLeft("×FUSE_READ", 12)
            + padLeft("", 24) + padLeft("cpu %", 7))
        for (title, key) in sequentialRows {
            lines.append(padRight("  " + title, 34) + cell(median("\(key)_seq1m_mbps"), 1, 9)
                + cell(rateRatio(key, to: "native"), 2, 9) + cell(rateRatio(key, to: "fuse_read"), 2, 12)
                + padLeft("", 24) + cell(median("\(key)_seq1m_cpu_pct"), 0, 7))
        }

        lines.append(padRight("mapping requests, \(range), \(size.mappingRequests)/round", 34) + padLeft("p50 µs", 9) + padLeft("p99 µs", 9))
        for (title, key) in Self.mappingRows {
            lines.append(padRight("  " + title, 34) + cell(median("\(key)_p50_us"), 2, 9) + cell(median("\(key)_p99_us"), 2, 9))
        }
        return lines.joined(separator: "\n")
    }

    /// One line: {"suite":"dax","figures":{...},"ratios":{...},"params":{...}}.
    /// Figures in µs are per read or per request; ratios are of speed, so
    /// above 1 means faster than the baseline named after "_vs_".
    func json(quick: Bool) -> String {
        var figures: [(String, String)] = []
        func figure(_ key: String, decimals: Int) {
            guard samples[key] != nil else { return }
            figures.append((key, jsonNumber(median(key), decimals: decimals)))
        }
        for (_, key) in randomRows {
            figure("\(key)_rand4k_us", decimals: 3)
            figure("\(key)_rand4k_hit_pct", decimals: 1)
            figure("\(key)_rand4k_map_pct", decimals: 1)
            figure("\(key)_rand4k_fuse_read_pct", decimals: 1)
            figure("\(key)_rand4k_cpu_pct", decimals: 1)
        }
        for (_, key) in sequentialRows {
            figure("\(key)_seq1m_mbps", decimals: 1)
            figure("\(key)_seq1m_cpu_pct", decimals: 1)
        }
        for (_, key) in Self.mappingRows {
            figure("\(key)_p50_us", decimals: 3)
            figure("\(key)_p99_us", decimals: 3)
        }
        figure("page_cache_huge_pct", decimals: 1)

        var ratios: [(String, String)] = []
        func ratio(_ name: String, _ value: Double) { ratios.append((name, jsonNumber(value, decimals: 3))) }
        ratio("dax_rand4k_vs_native", latencyRatio("dax", to: "native"))
        ratio("dax_rand4k_vs_fuse_read", latencyRatio("dax", to: "fuse_read"))
        // The default mode (.auto) carries the short names.
        for percent in DaxBenchSuite.sweepPercents {
            ratio("dax_rand4k_window\(percent)_vs_fuse_read", latencyRatio("dax_window\(percent)_auto", to: "fuse_read"))
        }
        ratio("dax_seq1m_vs_native", rateRatio("dax", to: "native"))
        ratio("dax_seq1m_vs_fuse_read", rateRatio("dax", to: "fuse_read"))
        ratio("dax_rand4k_vs_native_mmap", latencyRatio("dax", to: "native_mmap"))
        ratio("fuse_read_rand4k_vs_native", latencyRatio("fuse_read", to: "native"))
        ratio("native_mmap_rand4k_vs_native", latencyRatio("native_mmap", to: "native"))
        ratio("dax_first_touch_rand4k_vs_native", latencyRatio("dax_first_touch", to: "native"))
        for percent in DaxBenchSuite.sweepPercents {
            for mode in DaxBenchSuite.sweepModes {
                let key = "dax_window\(percent)_\(mode.rawValue)"
                ratio("dax_rand4k_window\(percent)_\(mode.rawValue)_vs_fuse_read", latencyRatio(key, to: "fuse_read"))
                ratio("dax_rand4k_window\(percent)_\(mode.rawValue)_vs_native", latencyRatio(key, to: "native"))
            }
        }
        ratio("fuse_read_seq1m_vs_native", rateRatio("fuse_read", to: "native"))
        ratio("native_mmap_seq1m_vs_native", rateRatio("native_mmap", to: "native"))
        ratio("dax_first_touch_seq1m_vs_native", rateRatio("dax_first_touch", to: "native"))

        var params: [(String, String)] = [
            ("quick", quick ? "true" : "false"), ("rounds", "\(size.rounds)"),
            ("data_bytes", "\(size.dataBytes)"), ("range_bytes", "\(DaxBenchSuite.rangeSize)"),
            ("rand4k_seconds", jsonNumber(size.randomReadSeconds, decimals: 2)),
            ("warm_seconds", jsonNumber(size.warmSeconds, decimals: 2)),
            ("seq1m_min_seconds", jsonNumber(size.sequentialSeconds, decimals: 2)),
            ("mapping_requests", "\(size.mappingRequests)"),
        ]
        for percent in DaxBenchSuite.sweepPercents {
            params.append(("window\(percent)_bytes", "\(DaxBenchSuite.windowBytes(percent: percent, dataBytes: size.dataBytes))"))
        }
        return jsonObject([
            ("suite", "\"dax\""), ("figures", jsonObject(figures)),
            ("ratios", jsonObject(ratios)), ("params", jsonObject(params)),
        ])
    }
}
