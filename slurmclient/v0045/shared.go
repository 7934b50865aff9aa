package v0045

// sharedNone is the job description's "shared" for an exclusive job
// (Slurm's JOB_SHARED_NONE); see ../v0042/shared.go.
func sharedNone() *[]V0045JobDescMsgShared {
	return &[]V0045JobDescMsgShared{V0045JobDescMsgSharedNone}
}
