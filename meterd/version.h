/* version.h: build identity; MD_GIT_REVISION comes from CMake. */
#ifndef MD_VERSION_H
#define MD_VERSION_H

#define MD_VERSION "0.1.0"
#ifndef MD_GIT_REVISION
#define MD_GIT_REVISION "unknown"
#endif

#endif
