// FUSE replies from a server into the client (FUSEClient, DaxClient and
// its WindowManager), over a channel that answers each call from the input.
//
// Input: a script. Each step is {u8 operation, operation arguments}; every
// request the step sends is answered by the next reply record {u8 mode,
// u16 length, length bytes}. Mode bit 0 writes the request's unique and the
// record's true length into the reply header (so a fuzzer gets past the
// header checks at once); without it the bytes go as they are. Once the
// input runs out every call fails with EIO. Operations (mod 32) 0-15 are
// FUSEClient calls; 16-31 use a DaxClient (INIT on first use) with a fake
// 8 MiB DAX window (four 2 MiB ranges) and a fake direct mmap window, both
// plain anonymous memory (see ClientScript). Oracles: no crash, a result
// never claims more bytes than the caller's buffer, and the window manager
// keeps its invariants.

import ClientScript
import FuzzSupport

@_cdecl("LLVMFuzzerInitialize")
public func initialize(_ argc: UnsafeMutablePointer<Int32>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>) -> Int32 {
    prepareFuzzProcess()
    _ = (ScriptResources.window, ScriptResources.mmapWindow, ScriptResources.buffer)
    return 0
}

@_cdecl("LLVMFuzzerTestOneInput")
public func testOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let stream = ByteStream(FuzzInput(data, size))
    runClientScript(stream, over: ScriptedChannel(stream))
    return 0
}
