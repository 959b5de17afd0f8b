import FUSEABI
@testable import FUSEServer
import HostSystem
import Testing

@Suite struct InterruptTests {
    @Test func interruptSetsTheFlagOfARegisteredRequest() throws {
        let session = FUSESession(fileSystem: RecordingFS())
        let context = RequestContext(unique: 10)
        let result: Bool = try session.interruptible(context) { ctx throws(Errno) in
            #expect(!ctx.isInterrupted)
            session.interrupt(unique: 10)
            return ctx.isInterrupted
        }
        #expect(result)
    }

    @Test func anInterruptThatArrivesFirstIsNotLost() {
        let session = FUSESession(fileSystem: RecordingFS())
        session.interrupt(unique: 11)
        #expect(throws: Errno.interrupted) {
            try session.interruptible(RequestContext(unique: 11)) { _ throws(Errno) in 0 }
        }
    }
}
