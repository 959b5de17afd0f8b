// swift-tools-version: 6.1
// Coverage-guided fuzzing of every parser a peer controls (libFuzzer).
// Build and run with scripts/fuzz.sh; each fuzz-* executable is a libFuzzer
// target built with `--sanitize=fuzzer --sanitize=address` in debug, which
// also compiles daxfs with testability, so targets may `@testable import`
// internals. fuzz-seeds writes the seed corpora (Corpus/) from real messages.
import PackageDescription

/// A libFuzzer target: an executable whose entry is LLVMFuzzerTestOneInput.
func fuzzTarget(_ name: String, _ dependencies: [Target.Dependency]) -> Target {
    .executableTarget(name: name, dependencies: ["FuzzSupport"] + dependencies,
                      swiftSettings: [.unsafeFlags(["-parse-as-library"])])
}

let package = Package(
    name: "daxfs-fuzz",
    dependencies: [
        .package(name: "daxfs", path: ".."),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
    ],
    targets: [
        // The C a target needs that daxfs's CLinux has no reason to carry: a private tmpfs.
        .target(name: "FuzzShim"),
        // Input cursor, scratch directories, descriptor counts, message builders shared by targets and seeds.
        .target(name: "FuzzSupport", dependencies: [
            "FuzzShim",
            .product(name: "FUSEABI", package: "daxfs"),
            .product(name: "HostSystem", package: "daxfs"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        // The client-side script both fuzz-client-replies and its seed recorder run.
        .target(name: "ClientScript", dependencies: [
            "FuzzSupport",
            .product(name: "DaxClient", package: "daxfs"),
            .product(name: "FUSEServer", package: "daxfs"),
            .product(name: "FUSEABI", package: "daxfs"),
            .product(name: "HostSystem", package: "daxfs"),
        ]),
        fuzzTarget("fuzz-fuse-session", [
            .product(name: "FUSEServer", package: "daxfs"),
            .product(name: "PassthroughFS", package: "daxfs"),
            .product(name: "DaxClient", package: "daxfs"),
            .product(name: "FUSEABI", package: "daxfs"),
            .product(name: "HostSystem", package: "daxfs"),
        ]),
        fuzzTarget("fuzz-vhost-control", [
            .product(name: "CLinux", package: "daxfs"),
            .product(name: "VhostUser", package: "daxfs"),
            .product(name: "FUSEServer", package: "daxfs"),
            .product(name: "HostSystem", package: "daxfs"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        fuzzTarget("fuzz-descriptor-chains", [
            .product(name: "Virtio", package: "daxfs"),
            .product(name: "VhostUser", package: "daxfs"),
            .product(name: "FUSEServer", package: "daxfs"),
            .product(name: "HostSystem", package: "daxfs"),
        ]),
        fuzzTarget("fuzz-client-replies", ["ClientScript"]),
        fuzzTarget("fuzz-mapping-validators", [
            .product(name: "CLinux", package: "daxfs"),
            .product(name: "VhostUser", package: "daxfs"),
            .product(name: "FUSEServer", package: "daxfs"),
            .product(name: "FUSEABI", package: "daxfs"),
            .product(name: "HostSystem", package: "daxfs"),
        ]),
        fuzzTarget("fuzz-host-watch", [
            .product(name: "VhostUser", package: "daxfs"),
            .product(name: "PassthroughFS", package: "daxfs"),
            .product(name: "HostSystem", package: "daxfs"),
        ]),
        .executableTarget(name: "fuzz-seeds", dependencies: [
            "FuzzSupport", "ClientScript",
            .product(name: "FUSEABI", package: "daxfs"),
            .product(name: "FUSEServer", package: "daxfs"),
            .product(name: "PassthroughFS", package: "daxfs"),
            .product(name: "DaxClient", package: "daxfs"),
            .product(name: "HostSystem", package: "daxfs"),
        ]),
    ],
    swiftLanguageModes: [.v6]
)
