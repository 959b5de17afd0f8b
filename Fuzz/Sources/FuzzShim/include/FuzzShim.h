#pragma once

/// unshare(CLONE_NEWNS), every mount made private, then a tmpfs (nodev,
/// nosuid, size=64m) on `path`. 0, or -1 with errno. Call before threads start.
int fuzz_private_tmpfs(const char *path);
