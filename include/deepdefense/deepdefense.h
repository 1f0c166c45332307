/* deepdefense/deepdefense.h -- the whole public API of libdeepdefense. */
#ifndef DEEPDEFENSE_DEEPDEFENSE_H
#define DEEPDEFENSE_DEEPDEFENSE_H

#include "status.h"
#include <deepdefense/version.h> /* generated: lives in the build tree until installed */
#include "model.h"
#include "optim.h"
#include "io.h"
#include "zoo.h"
#include "gfa.h"
#include "data.h"
#include "attack.h"

#endif
