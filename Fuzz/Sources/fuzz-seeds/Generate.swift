// Writes the seed corpora (Fuzz/Corpus/<target>/) from messages laid out as
// real peers send them. Run: swift run --package-path Fuzz fuzz-seeds [DIR]
// (a plain build; scripts/fuzz.sh never runs this, it uses the committed seeds).
import FUSEABI
import FuzzSupport
import Glibc

@main
struct GenerateSeeds {
    static func main() {
        let corpus = CommandLine.arguments.count > 1 ? CommandLine.arguments[1] : "Corpus"
        func save(_ target: String, _ name: String, _ bytes: [UInt8]) {
            mkdir(corpus, 0o755)
            mkdir(corpus + "/" + target, 0o755)
            writeFile(corpus + "/" + target + "/" + name, bytes)
        }
        for (name, bytes) in fuseSessionSeeds() { save("fuzz-fuse-session", name, bytes) }
        for (name, bytes) in vhostControlSeeds() { save("fuzz-vhost-control", name, bytes) }
        for (name, bytes) in descriptorChainSeeds() { save("fuzz-descriptor-chains", name, bytes) }
        for (name, bytes) in clientReplySeeds() { save("fuzz-client-replies", name, bytes) }
        for (name, bytes) in mappingValidatorSeeds() { save("fuzz-mapping-validators", name, bytes) }
        for (name, bytes) in hostWatchSeeds() { save("fuzz-host-watch", name, bytes) }
        print("seeds written to \(corpus)")
    }
}
