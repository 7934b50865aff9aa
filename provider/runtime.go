package provider

// containerRuntime is one way to start a container on a compute node. Each lives
// in its own file (runtime_<name>.go); this table is the only other place
// a runtime is named, so adding or changing one touches its file and,
// for a new one, a line here.
type containerRuntime struct {
	// helpers are shell functions the job script defines once.
	helpers string
	// launch returns the lines of a container's shell function that start
	// it: given its resolved command, env, mounts and image.
	launch func(t *translator, c resolved) (string, error)
	// image is false for a runtime that has no image (none): the pod's
	// pull secrets and the image checks do not apply.
	image bool
	// vars are the shell variables helpers sets, which a container's
	// function uses: srun's tasks get them too (tasks.go).
	vars []string
	// messageFile: the runtime can bind a file at the container's
	// terminationMessagePath (a path the image need not have).
	messageFile bool
	// runAs: the runtime runs a container as securityContext's runAsUser
	// and runAsGroup (resolved.uid, gid); others run it as the job's user
	// and fail a container that asks for another.
	runAs bool
}

var runtimes = map[string]containerRuntime{
	RuntimeNone:         {launch: func(_ *translator, c resolved) (string, error) { return launchNone(c) }},
	RuntimePodman:       {helpers: podmanHelpers, launch: (*translator).launchPodman, image: true, vars: []string{"svk_podman"}, messageFile: true, runAs: true},
	RuntimeCharliecloud: {helpers: charliecloudHelpers, launch: (*translator).launchCharliecloud, image: true, vars: []string{"svk_ch_run", "svk_ch_storage"}},
	RuntimeApptainer:    {helpers: imageFileHelpers + apptainerHelpers, launch: (*translator).launchApptainer, image: true, vars: []string{"svk_cache"}, messageFile: true},
	RuntimeEnroot:       {helpers: imageFileHelpers + enrootHelpers, launch: (*translator).launchEnroot, image: true, vars: []string{"svk_cache"}, messageFile: true},
}
