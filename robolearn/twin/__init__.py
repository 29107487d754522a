"""The robot's MuJoCo model behind the deploy layer's interfaces, for rehearsals and arm teleop on a full install:
`SimRobot` (the `sim` transport: the training model driven like hardware) and `ArmKinematics` (end-effector pose,
Jacobian and gravity/Coriolis torques from the same model). It imports the simulator; the deploy runtime does not
import it (`robolearn[deploy]` has no MuJoCo), it finds the twin through the transports registry."""
