import HostSystem

/// Translation between the client's uids (or gids) and the host's, done by
/// the server (virtiofsd's --translate-uid/--translate-gid). Requests run as
/// the host id of their caller and chown to host ids; attributes go back
/// with guest ids. Ids no rule names pass unchanged. The first rule that
/// names an id wins.
public struct IDTranslation: Sendable, Equatable {
    public enum Rule: Sendable, Equatable {
        /// guest [guestBase, +count) → host [hostBase, +count) (one direction).
        case guest(guestBase: UInt32, hostBase: UInt32, count: UInt32)
        /// host [hostBase, +count) → guest [guestBase, +count) (one direction).
        case host(hostBase: UInt32, guestBase: UInt32, count: UInt32)
        /// Every guest id of [guestBase, +count) → the one host id.
        case squashGuest(guestBase: UInt32, hostID: UInt32, count: UInt32)
        /// Every host id of [hostBase, +count) → the one guest id.
        case squashHost(hostBase: UInt32, guestID: UInt32, count: UInt32)
        /// Guest ids of [guestBase, +count) may not own a file: creating one
        /// as such a caller, or chown to such an id, fails with EPERM.
        case forbidGuest(guestBase: UInt32, count: UInt32)
        /// guest [guestBase, +count) ↔ host [hostBase, +count), both ways.
        case map(guestBase: UInt32, hostBase: UInt32, count: UInt32)
    }

    public var rules: [Rule] = []
    public init(_ rules: [Rule] = []) { self.rules = rules }
    public var isEmpty: Bool { rules.isEmpty }

    private static func offset(_ id: UInt32, _ base: UInt32, _ count: UInt32) -> UInt32? {
        id >= base && UInt64(id) < UInt64(base) + UInt64(count) ? id - base : nil
    }

    /// The host id for a guest id, or nil when the guest id may not own files.
    public func toHost(_ id: UInt32) -> UInt32? {
        for rule in rules {
            switch rule {
            case .guest(let guestBase, let hostBase, let count), .map(let guestBase, let hostBase, let count):
                if let offset = Self.offset(id, guestBase, count) { return hostBase &+ offset }
            case .squashGuest(let guestBase, let hostID, let count):
                if Self.offset(id, guestBase, count) != nil { return hostID }
            case .forbidGuest(let guestBase, let count):
                if Self.offset(id, guestBase, count) != nil { return nil }
            case .host, .squashHost:
                continue
            }
        }
        return id
    }

    /// The id a caller with guest id `id` runs as on the host: its
    /// translation, or itself when it may not own files (that is refused
    /// where a file would get it).
    public func credential(_ id: UInt32) -> UInt32 { toHost(id) ?? id }

    /// The guest id for a host id.
    public func toGuest(_ id: UInt32) -> UInt32 {
        for rule in rules {
            switch rule {
            case .host(let hostBase, let guestBase, let count), .map(let guestBase, let hostBase, let count):
                if let offset = Self.offset(id, hostBase, count) { return guestBase &+ offset }
            case .squashHost(let hostBase, let guestID, let count):
                if Self.offset(id, hostBase, count) != nil { return guestID }
            case .guest, .squashGuest, .forbidGuest:
                continue
            }
        }
        return id
    }

    /// Parses one virtiofsd rule: `map:G:H:N`, `guest:G:H:N`, `host:H:G:N`,
    /// `squash-guest:G:H:N`, `squash-host:H:G:N`, `forbid-guest:G:N`.
    public static func parseRule(_ text: String) throws(IDTranslationError) -> Rule {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
        guard let kind = parts.first else { throw IDTranslationError("empty translation rule") }
        let numbers = parts.dropFirst().map { UInt32($0) }
        guard !numbers.contains(nil) else { throw IDTranslationError("\(text): the ids and the count must be numbers") }
        let n = numbers.map { $0! }
        let expected = kind == "forbid-guest" ? 2 : 3
        guard n.count == expected else {
            throw IDTranslationError("\(text): \(kind) takes \(expected) numbers (\(kind == "forbid-guest" ? "base:count" : "from:to:count"))")
        }
        guard n[expected - 1] > 0 else { throw IDTranslationError("\(text): the count must be at least 1") }
        let rule: Rule
        switch kind {
        case "map": rule = .map(guestBase: n[0], hostBase: n[1], count: n[2])
        case "guest": rule = .guest(guestBase: n[0], hostBase: n[1], count: n[2])
        case "host": rule = .host(hostBase: n[0], guestBase: n[1], count: n[2])
        case "squash-guest": rule = .squashGuest(guestBase: n[0], hostID: n[1], count: n[2])
        case "squash-host": rule = .squashHost(hostBase: n[0], guestID: n[1], count: n[2])
        case "forbid-guest": rule = .forbidGuest(guestBase: n[0], count: n[1])
        default:
            throw IDTranslationError("\(text): the type must be guest, host, squash-guest, squash-host, forbid-guest or map")
        }
        let ranges = kind == "map" || kind == "guest" || kind == "host" ? [n[0], n[1]] : [n[0]]
        for base in ranges where UInt64(base) + UInt64(n[expected - 1]) > 1 << 32 {
            throw IDTranslationError("\(text): the range runs past the last id")
        }
        return rule
    }
}

public struct IDTranslationError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}
