/* mpi-hello: an MPI hello world for the lab's jobs of tasks. Each rank
 * prints its rank, the world's size, its Slurm node and the sum of one per
 * rank over MPI_Allreduce (so the ranks really talked).
 *
 * Built by hack/lab/lab-up.sh with the host's gcc against the rootfs's
 * libmpich.so.12, without MPICH's headers (the rootfs has no compiler):
 * the declarations below are MPICH's ABI, whose handles are constants. */
#include <stdio.h>
#include <stdlib.h>
typedef int MPI_Comm;
#define MPI_COMM_WORLD ((MPI_Comm)0x44000000)
int MPI_Init(int *, char ***);
int MPI_Comm_rank(MPI_Comm, int *);
int MPI_Comm_size(MPI_Comm, int *);
int MPI_Allreduce(const void *, void *, int, int, int, MPI_Comm);
int MPI_Finalize(void);
#define MPI_INT ((int)0x4c000405)
#define MPI_SUM ((int)0x58000003)
int main(int argc, char **argv) {
	int rank, size, one = 1, sum = 0;
	const char *node = getenv("SLURMD_NODENAME");
	if (MPI_Init(&argc, &argv)) return 1;
	MPI_Comm_rank(MPI_COMM_WORLD, &rank);
	MPI_Comm_size(MPI_COMM_WORLD, &size);
	MPI_Allreduce(&one, &sum, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
	printf("rank %d of %d on %s, allreduce %d\n", rank, size, node ? node : "?", sum);
	return MPI_Finalize();
}
