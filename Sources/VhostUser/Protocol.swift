/// vhost-user message numbers, flags and feature bits (QEMU docs/interop/vhost-user.rst).
public enum VhostUser {
    /// Frontend → backend requests.
    public enum Request: UInt32, Sendable {
        case getFeatures = 1, setFeatures = 2, setOwner = 3, resetOwner = 4, setMemTable = 5
        case setLogBase = 6, setLogFD = 7, setVringNum = 8, setVringAddr = 9, setVringBase = 10
        case getVringBase = 11, setVringKick = 12, setVringCall = 13, setVringErr = 14
        case getProtocolFeatures = 15, setProtocolFeatures = 16, getQueueNum = 17, setVringEnable = 18
        case sendRARP = 19, netSetMTU = 20, setBackendReqFD = 21, iotlbMessage = 22, setVringEndian = 23
        case getConfig = 24, setConfig = 25, postcopyAdvise = 28, postcopyListen = 29, postcopyEnd = 30
        case getInflightFD = 31, setInflightFD = 32, resetDevice = 34, vringKick = 35
        case getMaxMemSlots = 36, addMemReg = 37, remMemReg = 38, setStatus = 39, getStatus = 40
        case getShmemConfig = 44
    }

    /// Backend → frontend requests on the backend channel (SET_BACKEND_REQ_FD).
    public enum BackendRequest: UInt32, Sendable {
        case configChangeMessage = 2
        case shmemMap = 9
        case shmemUnmap = 10
        /// The pre-standard virtio-fs DAX messages (8 ranges per message).
        case fsMap = 1000
        case fsUnmap = 1001
    }

    /// Header flags.
    public static let version: UInt32 = 0x1
    public static let versionMask: UInt32 = 0x3
    public static let replyFlag: UInt32 = 0x4
    public static let needReplyFlag: UInt32 = 0x8

    public static let headerSize = 12
    /// Largest payload daxfs accepts (GET_SHMEM_CONFIG's 2056 bytes is the largest it knows).
    public static let maxPayload = 4096
    public static let maxMemoryRegions = 8

    /// Virtio feature bits.
    public enum Feature {
        public static let notifyOnEmpty: UInt64 = 1 << 24
        public static let indirectDescriptors: UInt64 = 1 << 28
        public static let eventIndex: UInt64 = 1 << 29
        /// VHOST_USER_F_PROTOCOL_FEATURES.
        public static let protocolFeatures: UInt64 = 1 << 30
        public static let version1: UInt64 = 1 << 32
    }

    /// Protocol feature bits.
    public enum ProtocolFeature {
        public static let multiQueue: UInt64 = 1 << 0
        public static let replyAck: UInt64 = 1 << 3
        public static let backendRequest: UInt64 = 1 << 5
        public static let backendSendFD: UInt64 = 1 << 10
        public static let configureMemSlots: UInt64 = 1 << 15
        /// VHOST_USER_PROTOCOL_F_SHMEM: rust-vmm uses bit 21 today; early drafts used 20.
        /// Kept in one place so both ends agree.
        public static let shmem: UInt64 = 1 << 21
    }

    /// SET_VRING_KICK/CALL/ERR payload: index in bits 0–7, bit 8 = no descriptor (polling).
    public static let vringIndexMask: UInt64 = 0xFF
    public static let vringNoFD: UInt64 = 1 << 8

    /// SHMEM_MAP flags.
    public static let shmemMapReadWrite: UInt64 = 1 << 0
    /// The virtio-fs DAX cache window's shared-memory id.
    public static let cacheWindowID: UInt8 = 0
    /// The direct mmap window (daxfs FUSE direct mmap regions).
    public static let mmapWindowID: UInt8 = 1
}
