package provider

import "slices"

// allRuntimes are every runtime the provider knows, in a fixed order.
var allRuntimes = func() []string {
	var out []string
	for name := range runtimes {
		out = append(out, name)
	}
	slices.Sort(out)
	return out
}()
