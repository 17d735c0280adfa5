#!/bin/sh
# cmake --install into a fresh prefix, then build the C example against the installed library twice, as a
# host would: with pkg-config, and with CMake's find_package(streamgen). Both must link and run.
#   check_install.sh BUILD_DIR SOURCE_DIR
set -eu
build=$1
src=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cmake --install "$build" --prefix "$tmp/prefix" > "$tmp/install.log"
pc=$(dirname "$(find "$tmp/prefix" -name streamgen.pc | head -n 1)")
test -n "$pc" || { echo "no streamgen.pc installed"; exit 1; }
test -f "$tmp/prefix/include/streamgen/streamgen.h" || { echo "streamgen.h not installed"; exit 1; }

# pkg-config
cc -std=c99 -Wall -Werror -o "$tmp/with_pkg_config" "$src/examples/stream_video.c" $(PKG_CONFIG_PATH="$pc" pkg-config --cflags --libs streamgen)
set +e
"$tmp/with_pkg_config" > "$tmp/run.log" 2>&1
rc=$?
set -e
# No arguments: the usage line and exit status 2, from the installed library's process.
test "$rc" -eq 2 || { cat "$tmp/run.log"; echo "pkg-config build: exit $rc, expected 2"; exit 1; }
grep -q "usage:" "$tmp/run.log"

# find_package
mkdir "$tmp/consumer"
cat > "$tmp/consumer/CMakeLists.txt" <<CMAKE
cmake_minimum_required(VERSION 3.22)
project(consumer C)
find_package(streamgen 0.1 REQUIRED)
add_executable(stream_video "$src/examples/stream_video.c")
target_link_libraries(stream_video PRIVATE streamgen::streamgen)
CMAKE
cmake -S "$tmp/consumer" -B "$tmp/consumer/build" -DCMAKE_PREFIX_PATH="$tmp/prefix" > "$tmp/consumer.log" 2>&1 || { cat "$tmp/consumer.log"; exit 1; }
cmake --build "$tmp/consumer/build" > "$tmp/consumer-build.log" 2>&1 || { cat "$tmp/consumer-build.log"; exit 1; }
set +e
"$tmp/consumer/build/stream_video" > /dev/null 2>&1
rc=$?
set -e
test "$rc" -eq 2 || { echo "find_package build: exit $rc, expected 2"; exit 1; }
# The Python package, where the prefix's python3 would look, finds the installed libstreamgen.so by itself.
if [ -d "$tmp/prefix/lib/python3/dist-packages/streamgen" ]; then
  PYTHONPATH="$tmp/prefix/lib/python3/dist-packages" /usr/bin/python3 -c "import streamgen; assert streamgen.build_info()['api_version'] == 1" ||
    { echo "the installed Python module does not import"; exit 1; }
  echo "the installed Python module imports"
fi
echo "installed, and the C example built against it with pkg-config and with find_package"
