// swift-tools-version: 6.1
import PackageDescription

let package = Package(
    name: "daxfs",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "daxfs", targets: ["daxfs"]),
        .executable(name: "daxfs-virtiofsd", targets: ["daxfs-virtiofsd"]),
        .library(name: "ServeDaemon", targets: ["ServeDaemon"]),
        .library(name: "FUSEServer", targets: ["FUSEServer"]),
        .library(name: "PassthroughFS", targets: ["PassthroughFS"]),
        .library(name: "DevFUSE", targets: ["DevFUSE"]),
        .library(name: "DaxClient", targets: ["DaxClient", "DAX"]),
        // For the fuzz package (Fuzz/): the wire format, transports and system wrappers it drives.
        .library(name: "CLinux", targets: ["CLinux"]),
        .library(name: "FUSEABI", targets: ["FUSEABI"]),
        .library(name: "HostSystem", targets: ["HostSystem"]),
        .library(name: "Virtio", targets: ["Virtio"]),
        .library(name: "VhostUser", targets: ["VhostUser"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
    ],
    targets: [
        // The only C: macro values, ioctl numbers and syscalls Glibc lacks.
        .target(name: "CLinux"),
        // Syscall wrappers, Errno, fd owners, threads: the one place that touches errno.
        .target(name: "HostSystem", dependencies: ["CLinux"]),
        // FUSE 7.45 wire format: opcodes, flags, structs, little-endian codec.
        .target(name: "FUSEABI"),
        // Session, INIT negotiation, request validation, dispatch, the FileSystem protocol.
        .target(name: "FUSEServer", dependencies: [
            "FUSEABI", "HostSystem",
            .product(name: "Logging", package: "swift-log"),
        ]),
        // A host directory served through the FileSystem protocol.
        .target(name: "PassthroughFS", dependencies: [
            "FUSEServer", "HostSystem", "CLinux",
            .product(name: "Logging", package: "swift-log"),
        ]),
        // /dev/fuse transport: mount(2), worker threads, passthrough backing ids.
        .target(name: "DevFUSE", dependencies: [
            "FUSEServer", "HostSystem", "CLinux",
            .product(name: "Logging", package: "swift-log"),
        ]),
        // The DAX window in this process and fault-safe copies out of it.
        .target(name: "DAX", dependencies: ["FUSEServer", "HostSystem", "CLinux"]),
        // The client side: FUSE requests, the window range manager, DAX reads and writes.
        .target(name: "DaxClient", dependencies: [
            "DAX", "FUSEABI", "FUSEServer", "HostSystem", "CLinux", "Virtio", "VhostUser",
            .product(name: "Logging", package: "swift-log"),
        ]),
        // Guest memory tables and split virtqueues, every address bounds-checked.
        .target(name: "Virtio", dependencies: ["HostSystem", "CLinux"]),
        // vhost-user: the backend (daxfs serve) and its virtio-fs device.
        .target(name: "VhostUser", dependencies: [
            "Virtio", "FUSEServer", "FUSEABI", "HostSystem", "CLinux",
            .product(name: "Logging", package: "swift-log"),
        ]),
        // Host files as QEMU 11.1 can map them: a private passthrough FUSE mount.
        .target(name: "MappingShadow", dependencies: [
            "DevFUSE", "VhostUser", "FUSEServer", "FUSEABI", "HostSystem", "CLinux",
            .product(name: "Logging", package: "swift-log"),
        ]),
        // The vhost-user-fs daemon: listener, sandbox, accept loop; virtiofsd's command line.
        .target(name: "ServeDaemon", dependencies: [
            "MappingShadow", "VhostUser", "PassthroughFS", "FUSEServer", "HostSystem", "CLinux",
            .product(name: "Logging", package: "swift-log"),
        ]),
        // A drop-in for virtiofsd (libvirt's <binary path=.../>).
        .executableTarget(name: "daxfs-virtiofsd", dependencies: [
            "ServeDaemon", "HostSystem", "CLinux",
            .product(name: "Logging", package: "swift-log"),
        ]),
        .executableTarget(name: "daxfs", dependencies: [
            "ServeDaemon", "MappingShadow", "FUSEServer", "PassthroughFS", "DevFUSE", "HostSystem", "DAX", "DaxClient", "VhostUser",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        // Puts itself in a seccomp/capability sandbox and reports what a call did (SandboxPrimitiveTests).
        .executableTarget(name: "daxfs-sandbox-probe", dependencies: ["HostSystem", "CLinux"]),
        .testTarget(name: "FUSEABITests", dependencies: ["FUSEABI"]),
        .testTarget(name: "FUSEServerTests", dependencies: ["FUSEServer", "FUSEABI", "HostSystem"]),
        .testTarget(name: "PassthroughFSTests", dependencies: ["PassthroughFS", "FUSEServer", "FUSEABI", "HostSystem", "CLinux"]),
        .testTarget(name: "DAXTests", dependencies: ["DAX", "DaxClient", "PassthroughFS", "FUSEServer", "FUSEABI", "HostSystem", "CLinux"]),
        .testTarget(name: "MountTests", dependencies: ["HostSystem", "CLinux"]),
        .testTarget(name: "VhostUserTests", dependencies: ["ServeDaemon", "VhostUser", "MappingShadow", "Virtio", "DaxClient", "DAX", "PassthroughFS", "FUSEServer", "FUSEABI", "HostSystem", "CLinux"]),
        .testTarget(name: "GuestTests", dependencies: ["HostSystem"]),
    ],
    swiftLanguageModes: [.v6]
)
