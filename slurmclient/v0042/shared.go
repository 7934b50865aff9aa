package v0042

// sharedNone is the job description's "shared" for an exclusive job
// (Slurm's JOB_SHARED_NONE). Hand-written per version: v0.0.42 types it as
// a list of strings, later versions as a list of an enum.
func sharedNone() *V0042JobShared { return &V0042JobShared{"none"} }
