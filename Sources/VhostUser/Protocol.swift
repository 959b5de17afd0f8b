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

    /// Protocol feature bits (VHOST_USER_PROTOCOL_F_*), numbered as QEMU 11.1's
    /// docs/interop/vhost-user.rst and rust-vmm vhost ≥ 0.17 number them. Every
    /// bit up to the highest in use is listed so that none is offered by
    /// accident; `implementedByBackend` names the ones `daxfs serve` speaks.
    /// Earlier drafts of the shared-memory messages used other numbers (bit 20,
    /// then 21): a frontend of today reads bit 21 as GPA_ADDRESSES, which
    /// changes the meaning of every memory table, so only bit 22 is SHMEM.
    public enum ProtocolFeature {
        /// More than one queue pair; GET_QUEUE_NUM.
        public static let multiQueue: UInt64 = 1 << 0
        /// Dirty-page logging through a shared memory fd (live migration of memory); not implemented.
        public static let logSharedMemoryFD: UInt64 = 1 << 1
        /// SEND_RARP (net devices only).
        public static let rarp: UInt64 = 1 << 2
        /// REPLY_ACK: a NEED_REPLY message gets a u64 status reply.
        public static let replyAck: UInt64 = 1 << 3
        /// NET_SET_MTU (net devices only).
        public static let netMTU: UInt64 = 1 << 4
        /// The backend request channel (SET_BACKEND_REQ_FD).
        public static let backendRequest: UInt64 = 1 << 5
        /// SET_VRING_ENDIAN for legacy cross-endian rings.
        public static let crossEndian: UInt64 = 1 << 6
        /// Crypto sessions (crypto devices only).
        public static let cryptoSession: UInt64 = 1 << 7
        /// Postcopy migration (userfaultfd).
        public static let pagefault: UInt64 = 1 << 8
        /// GET_CONFIG/SET_CONFIG: the device's config space comes from the backend.
        public static let config: UInt64 = 1 << 9
        /// File descriptors on backend requests (SHMEM_MAP carries the file).
        public static let backendSendFD: UInt64 = 1 << 10
        /// Host notifier areas (VRING_HOST_NOTIFIER_MSG).
        public static let hostNotifier: UInt64 = 1 << 11
        /// GET_INFLIGHT_FD/SET_INFLIGHT_FD.
        public static let inflightSharedMemoryFD: UInt64 = 1 << 12
        /// RESET_DEVICE instead of RESET_OWNER.
        public static let resetDevice: UInt64 = 1 << 13
        /// Kicks and calls as messages instead of eventfds.
        public static let inbandNotifications: UInt64 = 1 << 14
        /// GET_MAX_MEM_SLOTS, ADD_MEM_REG, REM_MEM_REG.
        public static let configureMemSlots: UInt64 = 1 << 15
        /// SET_STATUS/GET_STATUS.
        public static let status: UInt64 = 1 << 16
        /// Xen grant/foreign mappings.
        public static let xenMmap: UInt64 = 1 << 17
        /// Shared virtio objects (SHARED_OBJECT_* backend requests).
        public static let sharedObject: UInt64 = 1 << 18
        /// SET_DEVICE_STATE_FD/CHECK_DEVICE_STATE (device state migration).
        public static let deviceState: UInt64 = 1 << 19
        /// GET_VRING_BASE also reports inflight state.
        public static let getVringBaseInflight: UInt64 = 1 << 20
        /// The memory table's userspace_addr holds guest-physical addresses.
        public static let gpaAddresses: UInt64 = 1 << 21
        /// SHMEM_MAP/SHMEM_UNMAP backend requests and GET_SHMEM_CONFIG.
        public static let shmem: UInt64 = 1 << 22

        /// What `daxfs serve` implements; it never offers a bit outside this.
        public static let implementedByBackend = multiQueue | replyAck | backendRequest | config | backendSendFD
            | resetDevice | configureMemSlots | shmem
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
