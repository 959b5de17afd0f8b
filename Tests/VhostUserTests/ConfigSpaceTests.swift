import Glibc
import HostSystem
import Testing
import VhostUser

/// The protocol features `daxfs serve` offers and the virtio-fs config space
/// it answers (QEMU's generic vhost-user device reads it with GET_CONFIG).
@Suite(.serialized) struct ConfigSpaceTests {
    typealias R = VhostUser.Request
    typealias P = VhostUser.ProtocolFeature

    func u64(_ socket: MessageSocket, _ request: R) throws -> UInt64 {
        try socket.send(request: request.rawValue, flags: VhostUser.version, payload: [])
        let reply = try socket.receive()
        return reply.payload.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self).littleEndian }
    }

    @Test func featuresFollowTheOptionsAndNeverExceedWhatIsImplemented() throws {
        for (tag, cache) in [(nil, UInt64(0)), ("myfs", UInt64(64 << 20))] as [(String?, UInt64)] {
            var options = FSBackendOptions()
            options.tag = tag
            options.cacheSize = cache
            let fixture = try BackendFixture(options: options)
            defer { fixture.stop() }
            let socket = try fixture.rawConnection()
            defer { Glibc.close(socket.fd) }
            let offered = try u64(socket, .getProtocolFeatures)
            #expect(offered & ~P.implementedByBackend == 0)
            #expect((offered & P.config != 0) == (tag != nil), "CONFIG only with a tag")
            #expect((offered & P.shmem != 0) == (cache > 0), "SHMEM (bit 22) only with a window")
            #expect(offered & P.gpaAddresses == 0, "bit 21 is GPA_ADDRESSES, never offered")
            #expect(P.shmem == 1 << 22)
        }
    }

    @Test func getConfigAnswersTagAndQueuesAndSetConfigIsRefused() throws {
        var options = FSBackendOptions()
        options.tag = "myfs"
        options.announcedRequestQueues = 2
        let fixture = try BackendFixture(options: options)
        defer { fixture.stop() }
        let socket = try fixture.rawConnection()
        defer { Glibc.close(socket.fd) }
        let features = try u64(socket, .getProtocolFeatures)
        try socket.send(request: R.setProtocolFeatures.rawValue, flags: VhostUser.version,
                        payload: .le(features & (P.config | P.replyAck)))

        // VhostUserConfig {u32 offset, u32 size, u32 flags, payload}: the 40-byte virtio_fs_config.
        try socket.send(request: R.getConfig.rawValue, flags: VhostUser.version,
                        payload: .le(UInt32(0), UInt32(40), UInt32(0)) + [UInt8](repeating: 0, count: 40))
        let reply = try socket.receive()
        #expect(reply.request == R.getConfig.rawValue && reply.payload.count == 12 + 40)
        let config = Array(reply.payload.dropFirst(12))
        #expect(Array(config.prefix(4)) == Array("myfs".utf8) && config[4 ..< 36].allSatisfy { $0 == 0 })
        #expect(Array(config[36 ..< 40]) == .le(UInt32(2)))
        // A slice of it, and a size past VHOST_USER_MAX_CONFIG_SIZE (answered empty).
        try socket.send(request: R.getConfig.rawValue, flags: VhostUser.version, payload: .le(UInt32(36), UInt32(4), UInt32(0)))
        #expect(Array(try socket.receive().payload.dropFirst(12)) == .le(UInt32(2)))
        try socket.send(request: R.getConfig.rawValue, flags: VhostUser.version, payload: .le(UInt32(0), UInt32(4096), UInt32(0)))
        #expect(try socket.receive().payload == .le(UInt32(0), UInt32(0), UInt32(0)))

        // SET_CONFIG: refused with a failure status; the connection goes on.
        try socket.send(request: R.setConfig.rawValue, flags: VhostUser.version | VhostUser.needReplyFlag,
                        payload: .le(UInt32(0), UInt32(40), UInt32(0)) + [UInt8](repeating: 0x41, count: 40))
        #expect(try socket.receive().payload == .le(UInt64(1)))
        #expect(try u64(socket, .getQueueNum) > 1)
    }
}
