// Registers the CUDA backend with the engine (jaclab/backend.h). Called once by the Python
// extension at import; safe on machines without a GPU (arrays on "cuda" then raise on use).
#pragma once

namespace jaclab::cuda {
void register_backend();
}
