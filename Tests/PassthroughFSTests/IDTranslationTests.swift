import FUSEABI
import FUSEServer
import Glibc
import HostSystem
@testable import PassthroughFS
import Testing

/// --translate-uid/--translate-gid: requests run as the host ids, files land
/// with host owners, attributes go back with guest ids (real files, real
/// credentials; root needed to act as other users).
@Suite(.enabled(if: getuid() == 0, "needs root"))
struct IDTranslationTests {
    @Test func rulesTranslateBothWays() throws {
        let t = IDTranslation([
            .forbidGuest(guestBase: 7, count: 1), .map(guestBase: 1000, hostBase: 5000, count: 10),
            .squashGuest(guestBase: 2000, hostID: 65534, count: 100), .guest(guestBase: 3000, hostBase: 3100, count: 5),
            .squashHost(hostBase: 6000, guestID: 99, count: 10), .host(hostBase: 7000, guestBase: 70, count: 2),
        ])
        #expect(t.toHost(1003) == 5003 && t.toGuest(5003) == 1003)          // map, both ways
        #expect(t.toHost(1010) == 1010 && t.toGuest(5010) == 5010)          // just past the range
        #expect(t.toHost(2042) == 65534 && t.toGuest(65534) == 65534)       // squash-guest is one way
        #expect(t.toHost(3004) == 3104 && t.toGuest(3104) == 3104)          // guest is one way
        #expect(t.toGuest(6009) == 99 && t.toHost(99) == 99)
        #expect(t.toGuest(7001) == 71 && t.toHost(71) == 71)
        #expect(t.toHost(7) == nil && t.credential(7) == 7)                  // forbidden
        #expect(t.toHost(0) == 0 && t.toGuest(0) == 0)                       // unnamed ids pass
        #expect(try IDTranslation.parseRule("squash-guest:0:4294967295:1") == .squashGuest(guestBase: 0, hostID: UInt32.max, count: 1))
        #expect(throws: IDTranslationError.self) { try IDTranslation.parseRule("map:1:2:0") }
    }

    static func fixture(_ uid: [IDTranslation.Rule], _ gid: [IDTranslation.Rule]) throws -> (TemporaryDirectory, PassthroughFS) {
        let dir = TemporaryDirectory()
        chmod(dir.path, 0o777)
        var options = PassthroughFS.Options()
        options.uidTranslation = IDTranslation(uid)
        options.gidTranslation = IDTranslation(gid)
        let fs = try PassthroughFS(root: dir.path, options: options)
        try fs.initialize(connection: FUSEConnection(capabilities: fs.wantedCapabilities, kernelMinor: 45, maxWrite: 1 << 20, backing: nil, sink: nil))
        return (dir, fs)
    }

    @Test func aMappedCallerCreatesAsItsHostUserAndSeesItsOwnIds() throws {
        let (dir, fs) = try Self.fixture([.map(guestBase: 1000, hostBase: 41000, count: 1)],
                                         [.map(guestBase: 1000, hostBase: 41000, count: 1)])
        let guest = RequestContext(uid: 1000, gid: 1000)
        let created = try onItsOwnThread { () throws(Errno) -> Entry in
            try withNameTyped("mine") { name throws(Errno) in
                try fs.create(guest, parent: .root, name: name, mode: 0o600, flags: UInt32(O_RDWR), umask: 0, killSuidgid: false).0
            }
        }
        #expect(dir.lstat("mine")?.st_uid == 41000 && dir.lstat("mine")?.st_gid == 41000, "host owner")
        #expect(created.attr.uid == 1000 && created.attr.gid == 1000, "the guest sees its own ids")
        // A host file of host uid 41000 is the guest's 1000; chown to guest 1000 lands as 41000.
        dir.write("theirs", "x")
        #expect(chown(dir.at("theirs"), 41000, 0) == 0)
        let looked = try withName("theirs") { try fs.lookup(RequestContext(), parent: .root, name: $0) }
        #expect(looked.attr.uid == 1000 && looked.attr.gid == 0)
        dir.write("given", "x")
        let given = try withName("given") { try fs.lookup(RequestContext(), parent: .root, name: $0) }
        let changed = try fs.setattr(RequestContext(), node: given.node, SetattrRequest(uid: 1000, gid: 1000))
        #expect(dir.lstat("given")?.st_uid == 41000 && changed.attr.uid == 1000)
        // The mapped caller has the host user's rights: its 0600 file opens.
        // (On a thread of its own: the caller's credentials stay on the thread.)
        try onItsOwnThread { () throws(Errno) in
            let opened = try fs.open(guest, node: created.node, flags: UInt32(O_RDONLY), killSuidgid: false)
            try fs.release(guest, node: created.node, handle: opened.handle, flags: 0, lockOwner: nil, flush: false, flockRelease: false)
        }
    }

    @Test func squashedCallersShareOneHostUserAndForbiddenOnesOwnNothing() throws {
        let (dir, fs) = try Self.fixture([.forbidGuest(guestBase: 4242, count: 1), .squashGuest(guestBase: 2000, hostID: 43000, count: 100)], [])
        for uid: UInt32 in [2000, 2099] {
            let name = "squashed\(uid)"
            _ = try onItsOwnThread { () throws(Errno) -> Entry in
                try withNameTyped(name) { n throws(Errno) in try fs.mkdir(RequestContext(uid: uid, gid: 0), parent: .root, name: n, mode: 0o755, umask: 0) }
            }
            #expect(dir.lstat(name)?.st_uid == 43000, "uid \(uid) lands as 43000")
        }
        let forbidden = RequestContext(uid: 4242, gid: 0)
        #expect(throws: Errno.notPermitted) {
            try onItsOwnThread { () throws(Errno) -> Entry in
                try withNameTyped("nope") { n throws(Errno) in try fs.mkdir(forbidden, parent: .root, name: n, mode: 0o755, umask: 0) }
            }
        }
        #expect(!dir.exists("nope"))
        dir.write("file", "x")
        let file = try withName("file") { try fs.lookup(RequestContext(), parent: .root, name: $0) }
        #expect(throws: Errno.notPermitted) { try fs.setattr(RequestContext(), node: file.node, SetattrRequest(uid: 4242)) }
        #expect(dir.lstat("file")?.st_uid == 0)
    }
}

/// `withName` for typed-throws bodies.
func withNameTyped<R>(_ string: String, _ body: (FileName) throws(Errno) -> R) throws(Errno) -> R {
    let bytes = Array(string.utf8) + [0]
    return try bytes.withUnsafeBytes { raw -> Result<R, Errno> in
        guard let name = FileName(validating: UnsafeRawBufferPointer(rebasing: raw[..<(raw.count - 1)])) else { return .failure(.invalidArgument) }
        do throws(Errno) { return .success(try body(name)) } catch { return .failure(error) }
    }.get()
}
