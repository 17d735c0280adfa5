// Anchors the vtables of the exception types in one translation unit.
#include "streamgen/error.h"
