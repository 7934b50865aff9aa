// Command nnp is the program of the e2e suite's nonewprivs image, as
// upstream's nnp.c: it prints its effective uid, which its setuid-root bit
// raises to 0 unless the container runs with no_new_privs. Static
// (CGO_ENABLED=0), so the image needs no libc.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Printf("Effective uid: %d\n", os.Geteuid())
}
