"""ROS 2 interoperability: the rclpy node (thin adapter over the deploy runtime) and raw-DDS transports."""
